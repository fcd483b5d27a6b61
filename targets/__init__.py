"""Targets: where cells run. The spine ships the local host; probes describe any Linux machine."""
