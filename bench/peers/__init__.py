"""Side-by-side measurements against peer systems (issue 22): measuring tools, run by hand, not
part of the benchmark suite or the tests. Each peer runs from its own checkout and environment,
outside this repository."""
