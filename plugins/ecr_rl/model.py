"""ECR-RL: ECR whose stage-3 generator is further trained by RL against a judge validated against people."""
from __future__ import annotations

from crsbench_plugins.ecr.model import ECRModel
from crsbench_plugins.ecr_rl.config import rl_profiles


class ECRRLModel(ECRModel):
    name = "ecr-rl"
    # 3.1: built on ECR 3.1 (the cpu profile keeps the stage-2 epoch with the best validation
    # R@50); 3.0: rewarded by a judge validated against people, evaluated by another validated judge,
    # with seeds and a control arm; 2.1: the policy writes the whole reply, critic gated within
    # contexts; 2.0: built on ECR 2.0
    version = "3.1"
    description = "ECR + RL on the response generator (validated judge -> TRL GRPO with KL to ECR)"
    profiles = rl_profiles()
    @classmethod
    def default_judge(cls, config):
        """The harness judges replies on a seeded test sample with the evaluation judge."""
        return dict(config["rl_stage"]["eval_judge"])
    # TRL's trainer would join the launch's process group while the judge and critic steps
    # run in rank 0 alone; the expensive ECR stages can still use several processes:
    multi_process = ("its RL stage runs in one process; train ECR under accelerate launch "
                     "(`accelerate launch -m crsbench run ecr ...`), then run `crsbench run ecr-rl` with the same "
                     "settings in one process: it reuses that run's ECR checkpoints (rl_stage.reuse_ecr)")

    def fit(self, data) -> None:
        from crsbench_plugins.ecr_rl import pipeline

        self.reused = pipeline.reuse_ecr_checkpoints(self.config, self.context)
        super().fit(data)
        self.rl_report = pipeline.train_rl(self.state, self.config, data, self.context)

    def result_extra(self) -> dict:
        return {**super().result_extra(), "reused_ecr_run": self.reused, "rl": self.rl_report}
