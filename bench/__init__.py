"""mlmarket benchmarks: ``python -m bench`` measures the pipeline against bare baselines on this machine.

Figures are printed and written to ``bench/results/latest.json``; nothing here
asserts a speed.
"""
