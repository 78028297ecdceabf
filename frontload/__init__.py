"""frontload: put reasoning into language models from pretraining on, and measure whether it lasts.

Stages live in ``frontload.corpus``, ``frontload.synth``, ``frontload.filters``, ``frontload.train``
and ``frontload.analysis``; this package holds only the command line and the experiment file.
"""

__version__ = "0.1.0"
