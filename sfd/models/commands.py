"""``sfd archs``: the generator architectures ``generator.arch`` offers (sfd.models.archs)."""

from __future__ import annotations

import argparse
import json

from sfd.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "archs",
        help="list the generator architectures (spandrel id, licence, size, CUDA graph capture)",
        description="The architectures generator.arch accepts: spandrel's single-image SR networks with "
        "permissive licences. The parameter count is at the documented default size (x4). On a CUDA "
        "machine each one is built and a training forward+backward is captured as a CUDA graph.",
    )
    p.add_argument("names", nargs="*", metavar="ARCH", help="show these architectures' parameters and defaults")
    p.add_argument("--no-probe", action="store_true", help="do not try CUDA graph captures (CUDA machines)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_archs)


def cmd_archs(args: argparse.Namespace) -> int:
    from sfd.models import archs

    unknown = [n for n in args.names if n not in archs.ARCHS]
    if unknown:
        raise UsageError(f"unknown architecture {unknown[0]!r}; known: {', '.join(archs.ARCHS)}")
    if args.names:
        return _show_params(args.names, args.json)
    rows = archs.listing(probe=not args.no_probe)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'arch':<11} {'spandrel':<11} {'licence':<13} {'parameters':>12} {'learning':>12}  onnx  cuda graph")
    for r in rows:
        onnx = "yes" if r["onnx"] == "yes" else "no"
        print(
            f"{r['arch']:<11} {r['spandrel_id']:<11} {r['licence']:<13} {r['parameters']:>12,} {r['learning']:>12,}  "
            f"{onnx:<4}  {r['cuda_graph']}"
        )
    print(f"{len(rows)} architectures, plus auto (generator.pretrained's). Not offered (non-commercial licences, in")
    print(f"spandrel_extra_arches): {', '.join(archs.NON_COMMERCIAL)}")
    return 0


def _show_params(names: list[str], as_json: bool) -> int:
    from sfd.models import archs

    out = {n: archs.documented_defaults(n) for n in names}
    if as_json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    for name, params in out.items():
        spec = archs.ARCHS[name]
        print(f"{name}: spandrel {spec.spandrel_id}, {spec.licence}" + (f"; {spec.note}" if spec.note else ""))
        for key, value in params.items():
            print(f"  {key} = {value!r}")
    return 0
