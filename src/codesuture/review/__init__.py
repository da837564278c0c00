"""The review side: what an overlay does (explain), the state of a store (audit), and
taking patches back out (rollback)."""
