"""The help layout of the command-line tools: the description as written, and each
option's default after its help (left out where there is none to show: a required
argument, or a ``None`` default whose meaning the help states)."""
from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter,
                            argparse.ArgumentDefaultsHelpFormatter):
    """``argparse``'s ``ArgumentDefaultsHelpFormatter`` without ``(default: None)``."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default is None:
            return action.help
        return super()._get_help_string(action)
