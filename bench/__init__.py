"""ravend's benchmarks: outside the package, printing figures (`make bench`, `make bench-quick`)."""
