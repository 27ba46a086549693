"""GRPO with TRL's GRPOTrainer on kernel-bridge rollouts: each completion thinks with a live kernel.

    python examples/trl_grpo.py                              # CPU: the tiny random Qwen2, 2 steps
    python examples/trl_grpo.py --model Qwen/Qwen2.5-0.5B-Instruct --steps 100   # one GPU
    accelerate launch examples/trl_grpo.py --model Qwen/Qwen2.5-1.5B-Instruct \\
        --vllm-server http://GEN_HOST:8000 --gateway http://KERNEL_HOST:8888 --gateway-token T

TRL does the update (advantages, loss, optimizer, accelerate, vLLM weight sync); kernel-bridge
runs each completion through its ``Reasoner`` with a fresh kernel and hands TRL the token ids,
logprobs and ``env_mask`` (0 on the kernel's output). See docs/trl.md for what is tested where.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental in TRL 1.x


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--model", default="tiny", help="'tiny' (random; no download) or hub id/path")
    cli.add_argument("--steps", type=int, default=2)
    cli.add_argument("--generations", type=int, default=4, help="completions per prompt (G)")
    cli.add_argument("--prompts-per-step", type=int, default=2, help="per process")
    cli.add_argument("--max-completion-length", type=int, default=64)
    cli.add_argument("--tiers", default="1", help="built-in task tiers, e.g. 1,2 (3-4 use tools)")
    cli.add_argument("--tasks", help="a JSONL task file instead of the built-in tiers")
    cli.add_argument("--learning-rate", type=float, default=1e-5)
    cli.add_argument("--vllm-server", help="TRL's vLLM server, e.g. http://127.0.0.1:8000")
    cli.add_argument("--gateway", help="a Jupyter Kernel Gateway URL for the kernels")
    cli.add_argument("--gateway-token", default=os.environ.get("KERNEL_GATEWAY_TOKEN"))
    cli.add_argument("--pool-size", type=int, default=4, help="warm kernels per process")
    cli.add_argument("--output-dir", default="runs/trl-grpo")
    cli.add_argument("--traces", help="append every rollout's trace to this .jsonl file")
    args = cli.parse_args()

    import torch
    from trl import GRPOConfig, GRPOTrainer

    from kernel_bridge.reasoner import Limits
    from kernel_bridge.training.rollout import RolloutSettings
    from kernel_bridge.training.tasks import builtin_tasks, hold_out, load_tasks, split_tasks
    from kernel_bridge.training.trl import KernelRollouts, reward_funcs, task_dataset

    if args.tasks:
        tasks = hold_out(load_tasks(args.tasks), 0.2)
    else:
        tasks = builtin_tasks([int(t) for t in args.tiers.split(",")])
    train, _ = split_tasks(tasks)

    if args.model == "tiny":
        from kernel_bridge.training.policy import tiny_policy

        model, tokenizer = tiny_policy(seed=0)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype="auto")

    cuda = torch.cuda.is_available()
    config = GRPOConfig(
        output_dir=args.output_dir,
        max_steps=args.steps,
        num_generations=args.generations,
        per_device_train_batch_size=args.generations * args.prompts_per_step,
        max_completion_length=args.max_completion_length,
        learning_rate=args.learning_rate,
        bf16=cuda,
        use_cpu=not cuda,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_vllm=bool(args.vllm_server),
        vllm_mode="server",
        vllm_server_base_url=args.vllm_server,
    )
    settings = RolloutSettings(
        limits=Limits(max_steps=4, max_tokens=args.max_completion_length, step_timeout=20),
        # The random tiny model cannot read the default prompt; it would only make it long.
        system_prompt="none" if args.model == "tiny" else "default",
    )
    rollouts = KernelRollouts(
        f"vllm:{args.vllm_server}/v1" if args.vllm_server else "batched",
        tasks=train,
        settings=settings,
        pool_size=args.pool_size,
        kernel_options={"url": args.gateway, "token": args.gateway_token} if args.gateway else {},
        traces=args.traces,
    )
    trainer = GRPOTrainer(
        model,
        reward_funcs=reward_funcs({"correct": 1.0, "format": 0.1, "tool_errors": 0.2}),
        args=config,
        train_dataset=task_dataset(train),
        processing_class=tokenizer,
        rollout_func=rollouts,
    )
    begin = time.perf_counter()
    with rollouts:
        trainer.train()
    wall = time.perf_counter() - begin
    for log in trainer.state.log_history:
        if "loss" in log:
            print(
                f"step {log['step']}: loss {log['loss']:.4f}  reward {log['reward']:.3f}  "
                f"correct {log['rewards/correct/mean']:.2f}  "
                f"completion length {log['completions/mean_length']:.0f}"
            )
    print(
        f"{rollouts.rollouts_done} rollouts in {wall:.1f} s "
        f"({60 * rollouts.rollouts_done / wall:.0f}/min; {rollouts.rollout_seconds:.1f} s of it "
        "in the rollout_func)"
    )
    if rollouts.last_traces:
        trace = rollouts.last_traces[0]
        print(f"last trace: {trace.finish_reason}, {len(trace.steps)} code steps")
        print(repr(trace.text[:200]))


if __name__ == "__main__":
    main()
