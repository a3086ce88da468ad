"""Where a run executes: the device, mixed precision, seeding and optimiser policy (`device`), and one run on several
processes with torchrun (`distributed`).
"""
