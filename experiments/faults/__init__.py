"""Faults as scheduled, recorded events inside a trial: a schedule (``schedule``), the
injectors that plant them (``injectors``, ``supervisor``, ``proxy``), and the runner that plants
and clears each at its time and returns what happened (``runner``, ``timeline``)."""
