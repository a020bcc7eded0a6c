#!/usr/bin/env python
"""(K) the teaching kit's own trainer, `labkit.train.train_sft`, on the same model/data/settings as
lf_sft_lora.yaml. The kit's copy of the harness's arm (../shared/peer/labkit_sft_lora.py), kept in step with
the kit's SFTConfig names; benchmarks/llamafactory_speed.py puts it into the harness before a run. Run it with the kit's venv (torch 2.13.0+cpu, transformers 5.24, peft 0.21.2).

  $KIT_VENV/bin/python labkit_sft_lora.py --model $PEER_ROOT/model --data $PEER_ROOT/data/alpaca_synth.json \
      --out DIR [--group_by_length 0] [--max_steps N]
  ... --dump_tokens FILE        # write the kit's token ids + loss masks (check_same_tokens.py format) and exit

Settings (= lf_sft_lora.yaml): fp32, LoRA r8/alpha16/dropout 0 on every linear layer but lm_head, AdamW lr 1e-4,
linear decay, no warm-up, weight decay 0, max_grad_norm 1.0 (HF's default, the kit's too), batch 8, grad-accum 1,
1 epoch = 64 steps, seed 42, cutoff 256, loss on the response (+ its <|im_end|>\\n) only, SDPA, threads from
OMP_NUM_THREADS. Prompt = instruction + "\\n" + input (LLaMA-Factory's alpaca converter); the kit renders it with
the tokenizer's ChatML template exactly like LF's `chatml` template (check_same_tokens.py proves identical ids).

Timing (written to <out>/bench_metrics.json and to $BENCH_TIMER_OUT in the hook's format):
  train_runtime / steady_*: from the entry of the first optimizer step to the return of train_sft() (the span
                            HF's train_runtime covers: the training loop, no tokenization, no adapter set-up);
  loop_*:                   the whole train_sft() call (also tokenizes, attaches LoRA, checks the fast loss path);
  kit_meter_s:              the kit's own meter (sum of per-step times).
Checkpointing is off inside the loop (output_dir=None); the adapter is saved once after training, like LF.

Loss-alignment check only (not a timed configuration):
  --init_from FILE.pt  start from these LoRA weights (the hook's BENCH_INIT_OUT dump of an LF run) instead of
                       the kit's seeded init (the adapter is attached by the kit, then the values are copied);
  --order_from FILE    a JSON list of 64 batches of example indices (an LF run's batch order, see
                       align_batches.py): the examples are permuted so that the kit's ungrouped batch order
                       (group_by_length=False) yields exactly these batches.
"""
import time

T_PROC0 = time.time()  # imports below count as start-up

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402


def rusage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt, r.ru_nivcsw


def pairs_from_alpaca(path):
    rows = json.load(open(path))
    # LLaMA-Factory's alpaca converter: user turn = instruction + "\n" + input (when input is non-empty)
    return [(r["instruction"] + ("\n" + r["input"] if r["input"] else ""), r["output"]) for r in rows]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max_steps", type=int, default=-1)
    ap.add_argument("--group_by_length", type=int, default=1, help="1: the kit's default; 0: random batches")
    ap.add_argument("--dump_tokens")
    ap.add_argument("--init_from")
    ap.add_argument("--order_from")
    args = ap.parse_args()

    import accelerate
    import peft
    import torch
    import transformers

    import labkit
    from labkit.loader import load_model, load_tokenizer
    from labkit.train import SFTConfig, train_sft
    from labkit.train import sft as kit_sft
    from labkit.train.data import encode, length_grouped_batches

    t_imports = time.time()
    pairs = pairs_from_alpaca(args.data)
    tok = load_tokenizer(args.model)  # AutoTokenizer, local folder (its ChatML chat_template)
    cutoff = 256

    if args.dump_tokens:
        data = encode(tok, pairs, cutoff)
        ids = [list(e.ids) for e in data.examples]
        masks = [[0] * e.prompt_len + [1] * (len(e.ids) - e.prompt_len) for e in data.examples]
        json.dump({"input_ids": ids, "loss_mask": masks}, open(args.dump_tokens, "w"))
        print(f"dumped {len(ids)} examples, truncated={data.truncated}")
        return

    if args.order_from:  # permute the examples so that the kit's ungrouped batches are the given ones
        assert not args.group_by_length, "--order_from needs --group_by_length 0"
        wanted = [i for b in json.load(open(args.order_from)) for i in b]
        assert sorted(wanted) == list(range(len(pairs))), "the order must cover every example once"
        kit_order = [i for b in length_grouped_batches([0] * len(pairs), 8, 42, 0, False) for i in b]
        permuted = [None] * len(pairs)
        for j, src in enumerate(wanted):
            permuted[kit_order[j]] = pairs[src]
        pairs = permuted

    model = load_model(args.model, attn_implementation="sdpa", dtype=torch.float32)  # fp32 on CPU, sdpa
    method = "lora"
    if args.init_from:
        from labkit.adapters import attach_adapter
        model, _ = attach_adapter(model, "lora", r=8, alpha=16, dropout=0.0, target_modules="all-linear", seed=42)
        init = torch.load(args.init_from)
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        assert set(init) == set(params), (sorted(set(init) ^ set(params)))[:6]
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(init[n])
        method = None  # the kit trains the prepared model's trainable parameters

    config = SFTConfig(
        output_dir=None,  # no checkpoint inside the loop; the adapter is saved once below (as LF does)
        finetuning_type=method, lora_rank=8, lora_alpha=16, lora_dropout=0.0, lora_target="all",
        learning_rate=1e-4, num_train_epochs=1.0, max_steps=args.max_steps if args.max_steps > 0 else None,
        per_device_train_batch_size=8, gradient_accumulation_steps=1, cutoff_len=cutoff, warmup_ratio=0.0,
        lr_scheduler_type="linear", weight_decay=0.0, max_grad_norm=1.0, seed=42,
        group_by_length=bool(args.group_by_length),
        logging_steps=8,  # = LF's: history holds the mean loss of each 8 steps, as HF logs it
    )

    # note the first optimizer step's start (wrapping the module-level function train_sft calls per step)
    marks = {}
    orig_step = kit_sft._optimizer_step

    def timed_step(*a, **k):
        if "first" not in marks:
            marks["first"] = (time.perf_counter(), rusage())
        return orig_step(*a, **k)

    kit_sft._optimizer_step = timed_step
    step_losses = []
    t_ready = time.time()
    w0, r0 = time.perf_counter(), rusage()
    result = train_sft(model, tok, pairs, config, callbacks=[lambda info: step_losses.append(info.loss)])
    w1, r1 = time.perf_counter(), rusage()
    t_trained = time.time()
    result.model.save_pretrained(args.out)  # the trained adapter, once (LF: trainer.save_model())
    t_end = time.time()

    fw, fr = marks["first"]
    timer = dict(loop_wall_s=w1 - w0, loop_user_s=r1[0] - r0[0], loop_sys_s=r1[1] - r0[1],
                 loop_minflt=r1[2] - r0[2], loop_nivcsw=r1[3] - r0[3], torch_threads=torch.get_num_threads(),
                 global_step=result.steps, steady_wall_s=w1 - fw, steady_user_s=r1[0] - fr[0],
                 steady_sys_s=r1[1] - fr[1], pre_first_step_s=fw - w0)
    if os.environ.get("BENCH_TIMER_OUT"):
        json.dump(timer, open(os.environ["BENCH_TIMER_OUT"], "w"))
    out = dict(
        side="labkit",
        versions={"labkit": getattr(labkit, "__version__", "?"),
                  **{p.__name__: p.__version__ for p in (torch, transformers, peft, accelerate)}},
        group_by_length=bool(args.group_by_length),
        init_from=args.init_from, order_from=args.order_from,
        sequences=result.examples,
        truncated=result.truncated,
        steps=result.steps,
        tokens=result.tokens,  # non-padding tokens trained on (the kit's meter: attention-mask sum)
        train_runtime=w1 - fw,
        tokens_per_sec=result.tokens / (w1 - fw),
        train_loss_mean=sum(step_losses) / len(step_losses),
        last_logged_loss=result.history[-1]["loss"] if result.history else None,
        final_step_loss=result.final_loss,
        loss_log=[(h["step"], h["loss"]) for h in result.history],
        step_losses=step_losses,
        loss_path=result.loss_path,
        trainable=str(result.trainable),
        kit_meter_s=result.seconds,
        kit_tokens_per_second=result.tokens_per_second,
        kit_peak_rss_mib=result.peak_memory_mib,
        t_imports_s=t_imports - T_PROC0,
        t_setup_s=t_ready - t_imports,
        t_train_call_s=t_trained - t_ready,
        t_save_s=t_end - t_trained,
        **timer,
    )
    with open(os.path.join(args.out, "bench_metrics.json"), "w") as f:
        json.dump(out, f, indent=1)
    print("BENCH", json.dumps({k: v for k, v in out.items() if k not in ("loss_log", "step_losses")}))


if __name__ == "__main__":
    main()
