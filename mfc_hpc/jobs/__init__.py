"""Jobs: a configuration run end to end (build the problem once, solve, write the results),
composed from the drivers and the file formats; what the command line and the studies call."""
