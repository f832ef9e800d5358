"""Cost of one training iteration: SFD (Feat-D + TG-D) vs the pixel-space L_GAN baseline, side by side.

The supplement notes that SFD adds training overhead (a CLIP RN50 pass on SR and HR). This measures
that ratio on this machine, with the same generator, batch and patch size, alternating the two
runs so that both see the same machine load. Also measures the text-tower shortcut (only the
positions up to EOT go through the causal transformer) against the full 77-token pass.

    python benchmarks/train_step.py [--patch 128 --batch 4 --repeats 5 --device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sfd.config import load_config
from sfd.models.clip import TextEncoder, load_clip
from sfd.train import build_run, train_step


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--blocks", type=int, default=6, help="RRDB blocks (23 in the paper)")
    args = ap.parse_args()
    common = [f"generator.num_blocks={args.blocks}", "generator.pretrained=random", "clip.weights=random",
              "loss.vgg_weights=random", f"data.patch_size={args.patch}", f"image_d.input_size={args.patch}",
              f"train.device={args.device}"]  # fmt: skip
    runs = {
        "SFD (Feat-D + TG-D, L=32, N=5)": build_run(load_config(None, common)),
        "L_GAN (VGG-style pixel D)": build_run(load_config(None, common + [
            "feat_d.enabled=false", "tg_d.enabled=false", "image_d.type=vgg", "loss.gan_type=ragan"])),
    }  # fmt: skip
    s = args.patch // 4
    lr = torch.rand(args.batch, 3, s, s, device=args.device)
    hr = torch.rand(args.batch, 3, args.patch, args.patch, device=args.device)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for name, run in runs.items():
        train_step(run, lr, hr)  # warm-up
    for _ in range(args.repeats):  # interleaved: both runs see the same machine load
        for name, run in runs.items():
            times[name] += timed(lambda: train_step(run, lr, hr), 1)
    base = statistics.median(times["L_GAN (VGG-style pixel D)"])
    print(f"device {args.device}, batch {args.batch}, HR patch {args.patch}, RRDB {args.blocks} blocks, "
          f"{args.repeats} interleaved repeats (median)")  # fmt: skip
    print("| run | s / iteration | ratio to L_GAN |\n|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {statistics.median(t):.3f} | {statistics.median(t) / base:.2f} |")

    text = TextEncoder(load_clip("RN50", "random"))
    tokens = text.tokenize([" ".join(["X"] * 32)] * 10)
    emb = text.token_embedding(tokens)
    with torch.no_grad():
        short = statistics.median(timed(lambda: text.encode_embeddings(emb, tokens), args.repeats))
        full_mask = text.attn_mask

        def full():
            x = emb + text.positional_embedding
            x = text.ln_final(text.transformer(x, attn_mask=full_mask))
            return x[torch.arange(10), tokens.argmax(-1)] @ text.text_projection

        long = statistics.median(timed(full, args.repeats))
        same = torch.allclose(full(), text.encode_embeddings(emb, tokens), atol=1e-4)
    print(f"\ntext tower, 10 prompts of L=32: full 77 tokens {long:.3f} s, up to EOT {short:.3f} s "
          f"(x{long / short:.1f} faster; same features: {same})")  # fmt: skip


if __name__ == "__main__":
    main()
