"""`alignkit demo`: DPO on the embedded model with held-out before/after answers, capability probes and a
verdict. ``tasks``/``phrasings``: the prompts (train and held-out phrasings never shared); ``pairs``: the
preference pairs built from the model's own answers; ``run``: the flow; ``report``: what it prints."""
