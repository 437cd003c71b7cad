"""OpenVINO pipelines, one module per task, behind the small protocols in base.py."""
