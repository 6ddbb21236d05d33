"""ECR-RL policy optimisation: building TRL's GRPO or RLOO trainer from the resolved options."""
from __future__ import annotations

import copy
import dataclasses


def make_trainer(c, model_path, tokenizer, reward_func, dataset, work_dir, guard, progress):
    """TRL's trainer on the reference saved at ``model_path`` (policy and frozen reference both load it)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    proc = copy.deepcopy(tokenizer)
    proc.padding_side = "left"
    proc.truncation_side = "left"
    common = dict(
        output_dir=str(work_dir), max_steps=c["steps"], learning_rate=float(c["lr"]),
        lr_scheduler_type=c["lr_scheduler"], warmup_steps=0, max_grad_norm=float(c["max_grad_norm"]),
        per_device_train_batch_size=c["batch_size"] * c["num_generations"], gradient_accumulation_steps=1,
        num_generations=c["num_generations"], max_completion_length=c["max_new_tokens"],
        temperature=float(c["temperature"]), top_p=float(c["top_p"]), beta=float(c["beta"]),
        num_iterations=1, seed=int(c["seed"]), bf16=False, fp16=False, use_vllm=False,
        disable_dropout=True, report_to="none", logging_steps=1,
        save_strategy="no", log_completions=False, remove_unused_columns=False,
        disable_tqdm=not progress, dataloader_pin_memory=False,
    )
    if c["algorithm"] == "grpo":
        from trl import GRPOConfig as config_cls, GRPOTrainer as cls
        if c["loss_type"]:
            common["loss_type"] = c["loss_type"]
        if c["scale_rewards"] is not None:
            common["scale_rewards"] = c["scale_rewards"]
    else:
        from trl import RLOOConfig as config_cls, RLOOTrainer as cls
    # no activation (gradient) checkpointing: TRL turns it on by default; transformers 5 renamed it
    fields = {f.name for f in dataclasses.fields(config_cls)}
    common["activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"] = False
    args = config_cls(**common)
    trainer = cls(model=model_path, reward_funcs=[reward_func], args=args, train_dataset=dataset,
                  processing_class=proc, callbacks=[guard])
    if getattr(trainer, "ref_model", None) is None:
        raise RuntimeError(f"rl: {cls.__name__} built no reference model (beta={c['beta']})")
    trainer.remove_callback(PrinterCallback)
    if progress:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(quiet_progress_callback()())
    return trainer


def quiet_progress_callback():
    """HF's progress bar without the dict it prints at every log event."""
    from transformers.trainer_callback import ProgressCallback

    class QuietProgress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.training_bar is not None and logs and "reward" in logs:
                self.training_bar.set_postfix(reward=f"{logs['reward']:.3f}", kl=f"{logs.get('kl') or 0:.3g}",
                                              refresh=False)

    return QuietProgress
