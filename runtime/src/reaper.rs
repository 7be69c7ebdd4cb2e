//! The one place children of the agent are reaped (SIGCHLD -> waitpid(-1)), publishing exits
//! to whoever registered for a pid. The agent is a child subreaper.
