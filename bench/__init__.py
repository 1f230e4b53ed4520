"""Benchmarks and scenarios: `make bench` (durapipe against hand-written temporalio), `make throttle`."""
