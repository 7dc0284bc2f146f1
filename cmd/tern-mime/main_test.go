package main

import (
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/tern-mail/tern/internal/clitest"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"tern-mime": main})
}

// TestScripts runs testdata/script/*.txtar: tern-mime's command line.
func TestScripts(t *testing.T) { clitest.Run(t) }
