"""Fixtures shared by the CLI and deploy tests."""

from pathlib import Path

import pytest


@pytest.fixture
def tiny_model_file():
    """Path of a user's own model file (factories ``make`` and ``broken``)."""
    return Path(__file__).with_name("tiny_model.py")
