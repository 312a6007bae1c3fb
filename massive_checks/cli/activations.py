"""The commands that read activations: profile, heads, scan, diff."""

from __future__ import annotations

import json

from massive_checks.cli.arguments import session_of
from massive_checks.engine import models, readings
from massive_checks.engine.session import ModelSession
from massive_checks.language import interventions
from massive_checks.language.data import DataConfig
from massive_checks.measures.profile import profile_document


def cmd_profile(args) -> int:
    session, data = session_of(args)
    intervention = session.resolve(data, [interventions.parse(x) for x in args.ablate])
    document = profile_document(session.view(data, intervention, (args.min_value, args.min_ratio)))
    if args.json:
        print(json.dumps(document, indent=1))
        return 0
    print(f"{document['model']}  ({document['intervention']})")
    print(f"{'layer':>5}  {'top1':>10} {'dim':>5} {'tok':>4}  {'top2':>10}  {'top3':>10}  {'median':>8}  {'ratio':>9}")
    for row in document["layers"]:
        t = row["top"]
        print(
            f"{row['layer']:>5}  {t[0]['value']:>10.4g} {t[0]['dim']:>5} {t[0]['token']:>4}  {t[1]['value']:>10.4g}  "
            f"{t[2]['value']:>10.4g}  {row['median']:>8.4g}  {row['ratio']:>9.4g}"
        )
    dims = sorted({m["dim"] for m in document["massive"]})
    print(f"massive dims: {dims or 'none'}; tokens: {sorted({m['token'] for m in document['massive']}) or 'none'}")
    return 0


def cmd_heads(args) -> int:
    session, data = session_of(args)
    table = readings.head_score_table(session.view(data), "first")  # [L, H]
    rows = [{"layer": L, "head": H, "score": float(table[L, H])} for L in range(table.shape[0]) for H in range(table.shape[1])]
    rows.sort(key=lambda r: (-r["score"], r["layer"], r["head"]))
    if args.json:
        print(json.dumps({"model": args.model, "heads": rows}, indent=1))
    else:
        for r in rows:
            print(f"L{r['layer']}H{r['head']}  {r['score']:.4f}")
    return 0


def cmd_scan(args) -> int:
    from pathlib import Path

    from massive_checks.pipeline.scan import scan

    lm = models.load(args.model, args.device, args.dtype, device_map=args.device_map)
    out = Path(args.out or f"reports/scan-{args.model.replace('/', '__')}")
    summary = scan(
        args.model, lm, DataConfig(dataset=args.dataset, samples=args.samples, seq_len=args.seq_len), out, progress=not args.json
    )
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(
            f"{args.model}: massive dims {summary['massive_dims'] or 'none'}, tokens {summary['massive_tokens']}, "
            f"emerging at block {summary['emergence_layer']}; report {out / 'index.html'}; "
            f"draft spec {out / 'specs'}; golden {out / 'golden'}"
        )
        print(f"check the draft: pytest {out / 'specs'} --model {args.model} --golden-dir {out / 'golden'}")
    return 0


def cmd_diff(args) -> int:
    from massive_checks.pipeline.scan import diff, profile_summary

    data = DataConfig(dataset=args.dataset, samples=args.samples, seq_len=args.seq_len)
    summaries = [
        profile_summary(ModelSession(models.load(name, args.device, args.dtype, device_map=args.device_map)), data)
        for name in (args.model, args.other)
    ]
    result = diff(*summaries)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{'layer':>5}  {result['a'][:18]:>18}  {result['b'][:18]:>18}  {'change':>9}")
    for row in result["layers"]:
        print(
            f"{row['layer']:>5}  {row['top1_a']:>12.4g} d{row['dim_a']:<5}  {row['top1_b']:>12.4g} d{row['dim_b']:<5}  "
            f"{row['change']:>+9.1%}"
        )
    for key in ("massive_dims", "massive_tokens", "emergence_layer"):
        print(f"{key}: {result['a']} {result[key]['a']}  vs  {result['b']} {result[key]['b']}")
    return 0
