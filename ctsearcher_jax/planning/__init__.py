"""Planning TPU runs without a TPU: compile every program for a TPU topology and say what fits.

`ctsearcher plan` (commands/plan.py) is the front end. Modules, one job each:

    chips.py      published per-chip peaks of v4, v5e, v5p, v6e (with sources); topology names
    topology.py   libtpu's compile-only devices of a topology; libtpu detection and quieting
    inputs.py     abstract inputs (ShapeDtypeStructs with the run's shardings)
    programs.py   train / finetune / predict / extract built by the project's own builders
    analysis.py   compile, then memory, cost, collectives and CPU-only custom calls per chip
    hlo.py        collectives and custom calls read from HLO / StableHLO text
    flops.py      matrix FLOPs of a jaxpr, loops by trip count (XLA counts a loop body once)
    estimate.py   step time and MFU from FLOPs, bytes and the chip's peaks (a roofline)
    search.py     the largest batch that fits (memory affine in the batch)
    planner.py    plan(): topology -> programs -> plans
    report.py     the Markdown table and the JSON of a plan
    cuda.py       the same programs lowered for CUDA on a host without a GPU
"""
