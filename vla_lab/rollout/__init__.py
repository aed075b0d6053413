"""Running experts and policies in an environment, for evaluation and for collection alike.

* ``actors``: the Actor protocol and its expert, policy and DAgger-mixture implementations
* ``runtime``: :class:`~vla_lab.rollout.runtime.PolicyRuntime`, a checkpoint's policy with its
  processor, normalizer and execution settings (read in one place); ``processor``: the
  ``data_processor.json`` format
* ``episode``: the one episode loop that scores (evaluation) and records (collection)
* ``evaluate``: closed-loop evaluation (``vla-eval``); ``collect``, ``recording``, ``config``:
  collection (``vla-collect``); ``teleop``: recording of teleoperated episodes
"""
