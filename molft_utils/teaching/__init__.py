"""Layer 7, teaching: the student edition of the notebooks (nbgrader).

Modules: ``student``.
"""
