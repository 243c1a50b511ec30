"""The reference Engine: the plan's section-4.1 API over a lazy simulation, with fault knobs."""
