"""Benchmarks of CG-Taylor beyond the zoo: ``real_scale`` (the paper's transformers at their real sizes)."""
