"""Layer 7, teaching: the student edition of the notebooks (nbgrader).

Modules: ``markup`` (solution regions, hints, tags), ``grading`` (nbgrader metadata), ``student`` (the student
edition, the release folder and the command).
"""
