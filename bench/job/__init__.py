"""`make bench` (python -m bench): the main job, its tables and plots."""
