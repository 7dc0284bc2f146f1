// Package maildir is tern's Maildir++ store, which tern-deliver, tern-pop3d
// and tern-imapd share: folders, durable delivery, flags, keywords, the
// per-folder UID list and the maildirsize quota.
//
// Why it is built this way: several programs on several hosts may work on
// one Maildir at once, over NFS. Delivery needs no lock (a unique name in
// tmp/, fsync, link into new/). Everything that must be agreed on — the
// UIDs — lives in one small file per folder that is replaced whole by
// rename, so readers need no lock, and that is changed only under a lock
// file made with link(2), which works over NFS where flock may not. Renames
// of messages (flag changes) take the same lock, so that a Sync never
// mistakes a message being renamed for an expunged one.
//
// The on-disk conventions are documented in tern-maildir(5).
package maildir
