"""frontload: put reasoning into language models from pretraining on, and measure whether it lasts.

Stages live in ``frontload.corpus``, ``frontload.synth``, ``frontload.filters``, ``frontload.train``
and ``frontload.analysis``; the kernel they share is ``frontload.core``. This package also holds
the study file, the runner and the command line.
"""

__version__ = "0.1.0"
