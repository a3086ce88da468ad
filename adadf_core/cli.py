"""The `adadf` command. Each sub-command is implemented by the module that does the work.

Every entry below names ``module:function``; the function takes the remaining argv list and returns an
exit code. Modules are imported lazily so that, for example, `adadf align` never imports torch first.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "generate-synthfer": ("adadf_core.synthfer:cli_main", "write the embedded SynthFER data set to disk"),
    "pretrain-synthfer": ("adadf_core.pretrain:cli_main", "pretrain the ResNet-18 that SynthFER runs start from (MS-Celeb stand-in)"),
    "train": ("adadf_core.train:cli_main", "train one run (Ada-DF, an ablation variant or a comparison method)"),
    "evaluate": ("adadf_core.evaluate:cli_main", "evaluate a finished or interrupted run folder"),
    "align": ("adadf_core.align:cli_main", "detect and align faces in a folder tree (MTCNN + similarity transform)"),
    "reproduce": ("adadf_core.pipeline:cli_main", "run every notebook with papermill and write results/<dataset>/"),
}


def usage() -> str:
    lines = ["usage: adadf <command> [options]", "", "commands:"]
    lines += [f"  {name:<18} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`adadf <command> --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"adadf: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
