// Command memprobe opens a Maildir as tern-pop3d's session does and prints
// the peak RSS and heap, with a heap profile on request: a look inside the
// memory row of tests/bench/pop3.sh.
package main

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/tern-mail/tern/internal/account"
	"github.com/tern-mail/tern/pop3d"
)

func main() {
	prof := flag.String("heap", "", "write a heap profile here after login")
	cpu := flag.String("cpu", "", "write a CPU profile of the login and the commit here")
	allocs := flag.String("allocs", "", "write a profile of every allocation of the login and the commit here")
	flag.Parse()
	if *cpu != "" {
		f, err := os.Create(*cpu)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	t0 := time.Now()
	store, err := account.OpenStore(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	box, err := pop3d.OpenMaildir(store)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	msgs := box.Messages()
	t1 := time.Now()
	runtime.GC()
	var live runtime.MemStats
	runtime.ReadMemStats(&live)
	status, _ := os.ReadFile("/proc/self/status")
	fmt.Printf("live heap after login %d MiB, %s\n", live.HeapAlloc>>20, regexp.MustCompile(`VmHWM:\s+\d+ kB`).Find(status))
	if *prof != "" {
		f, _ := os.Create(*prof)
		pprof.WriteHeapProfile(f)
		f.Close()
	}
	all := make([]int, len(msgs))
	for i := range all {
		all[i] = i
	}
	if err := box.Commit(nil, all); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	t2 := time.Now()
	box.Close()
	if *allocs != "" {
		f, _ := os.Create(*allocs)
		pprof.Lookup("allocs").WriteTo(f, 0)
		f.Close()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b, _ := os.ReadFile("/proc/self/status")
	hwm := regexp.MustCompile(`VmHWM:\s+\d+ kB`).Find(b)
	fmt.Printf("%d messages, login %v, commit %v, %s, heap sys %d MiB, total alloc %d MiB, gc %d\n",
		len(msgs), t1.Sub(t0).Round(time.Millisecond), t2.Sub(t1).Round(time.Millisecond), hwm, ms.HeapSys>>20, ms.TotalAlloc>>20, ms.NumGC)
}
