"""Jobs as folders on disk run as subprocesses: the runner, the typed status, the callback and the launch entry."""
