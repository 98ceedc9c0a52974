"""Who may do what: SCRAM logins, session tokens, ACLs, quotas, the guard every actor runs, and
the Controller's security registry and API."""
