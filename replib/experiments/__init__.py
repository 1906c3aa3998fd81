"""Experiments that a notebook runs from the parts below: `t2i_benchmark` (notebook 06's detection benchmark, whose
model notebook 07 steers), `collapse` (notebook 10's recursive training) and `sd14_run` (how notebooks 08-09 start)."""
