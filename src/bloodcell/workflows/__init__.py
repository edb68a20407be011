"""Jobs above the library: they read manifests and folders, run library code and write run folders."""
