"""Example agents shipped with Axon: used by the demo and the test suite."""
