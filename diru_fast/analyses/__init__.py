"""Tests of the prototype's scientific claims, each a measurement with a stated verdict rule.

- :mod:`.specialization`   do compartments specialize to different frequencies? (the symmetry argument, the
                           index vs a permutation null, unit selectivity vs an LSTM and random features)
- :mod:`.gradient_flow`    ||∂h_T/∂h_t|| against T - t for DIRU, LSTM (forget bias 0 and 1), GRU and tanh RNNs
                           (same d and parameter-matched)
- :mod:`.memory_capacity`  memory-task error against delay for k = 1, 2, 4, 8 compartments
- :mod:`.real_data`        DIRU vs LSTM vs GRU at equal parameters on digits (sklearn) and sunspots (statsmodels,
                           rolling origin)
- :mod:`.report`           results/ANALYSES.md: the claim, the rule, the measurement, the verdict, per analysis
- :mod:`.plots`            the figures
- :mod:`.common`           the standardised memory task, the models and controls, training with clipping, the
                           tests (paired t, Holm, power, Fisher's method), JSON files

The command line: ``python -m diru_fast specialization | gradient-flow | memory-capacity | real-data |
analyses`` (defined in :mod:`.cli`).
"""
