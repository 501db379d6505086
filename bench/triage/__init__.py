"""Triage of the asv history's alerts: each re-measured with the gate, each confirmed one bisected (python -m bench triage)."""
