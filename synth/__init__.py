"""frontload.synth: reasoning problems with checkable answers, and traces generated with vLLM."""
