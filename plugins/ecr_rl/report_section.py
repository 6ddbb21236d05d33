"""The ECR-RL section of ``crsbench report``: judges, critic and RL summary of a run whose
result has ``extra.rl`` (registered through ``register_report_sections``). Light: no torch."""
from __future__ import annotations

from crsbench.tables import fmt, fmt_p


def rl_summary(results: list[dict], labels: list[str]) -> list[tuple]:
    """One "Judges, critic and RL" block group per run that has an RL summary, in run order."""
    blocks: list[tuple] = []
    for r, label in zip(results, labels):
        rl = (r.get("extra") or {}).get("rl")
        if rl:
            blocks.append(("h2", f"Judges, critic and RL: {label}"))
            for role, j in (rl.get("judges") or {}).items():
                if isinstance(j, dict) and j.get("validation"):
                    v = j["validation"]
                    blocks.append(("p", f"{role} judge {j.get('id')}: validity gate "
                                        f"{'passed' if v.get('ok') else 'failed'} ({v.get('why')}); "
                                        f"{v.get('aspect')} Spearman with people {fmt(v.get('spearman'), 3)} pooled, "
                                        f"{fmt(v.get('within_system_spearman'), 3)} within system."))
            study = rl.get("study") or {}
            if study.get("comparisons"):
                primary = study.get("primary_metric")
                blocks.append(("p", f"Held-out study, judged by {study.get('key')} on {study.get('n_contexts')} test "
                                    f"contexts (one per dialogue); metric {primary}. Verdict: "
                                    f"{'improvement' if (study.get('verdict') or {}).get('improvement') else 'no claim'}"
                                    f" ({(study.get('verdict') or {}).get('why')})."))
                rows = []
                for name, c in study["comparisons"].items():
                    pv, lc = (c.get("paired") or {}).get(primary) or {}, (c.get("length_controlled") or {}).get(primary) or {}
                    words = c.get("length_words") or {}
                    rows.append([name, fmt(pv.get("delta")), f"[{fmt(pv.get('ci_low'))}, {fmt(pv.get('ci_high'))}]",
                                 fmt(lc.get("intercept")), f"[{fmt(lc.get('ci_low'))}, {fmt(lc.get('ci_high'))}]",
                                 fmt(words.get("delta"), 2), str(c.get("n_judged"))])
                blocks.append(("table", ["comparison", "B - A", "95% CI", "length-controlled", "95% CI",
                                         "words B - A", "n"], rows))
            critic = rl.get("critic", {})
            heads = critic.get("heads", {})
            combined = critic.get("combined", {})
            if critic:
                blocks.append(("p", f"Critic held-out: {critic.get('n_contexts_heldout', '?')} contexts the critic "
                                    f"never saw ({critic.get('n_heldout')} judged replies)."))
            blocks.append(("table", ["head", "held-out Spearman", "held-out R²", "within-context accuracy", "n"],
                           [[m, fmt(h.get("spearman"), 3), fmt(h.get("r2"), 3), fmt(h.get("within_context_accuracy"), 3),
                             str(h.get("n_heldout"))] for m, h in heads.items()] +
                           [["combined", fmt(combined.get("spearman"), 3), fmt(combined.get("r2"), 3),
                             fmt((combined.get("within_context") or {}).get("accuracy"), 3),
                             str(combined.get("n_heldout"))]]) if critic else ("p", "No critic: the reward judge scores every completion."))
            within, across = combined.get("within_context") or {}, combined.get("across_contexts") or {}
            if within:
                blocks.append(("p", f"Gate numbers (combined): within-context pairwise accuracy "
                                    f"{fmt(within.get('accuracy'), 3)} [{fmt(within.get('ci_low'), 3)}, "
                                    f"{fmt(within.get('ci_high'), 3)}] on {within.get('n_pairs')} same-context pairs; "
                                    f"Spearman across contexts {fmt(across.get('spearman'), 3)} "
                                    f"[{fmt(across.get('ci_low'), 3)}, {fmt(across.get('ci_high'), 3)}]."))
            components = rl.get("rl", {}).get("components") or {}
            if components:
                blocks.append(("p", "Reward components during RL (std within a prompt's completions, and over the batch):"))
                blocks.append(("table", ["component", "weight", "within-group std", "share of spread", "batch std",
                                         "steps left out"],
                               [[k, fmt(v.get("weight")), fmt(v["within_group_std_mean"], 4),
                                 fmt(v.get("share_of_within_group_spread"), 3), fmt(v["batch_std_mean"], 4),
                                 f"{v['steps_constant_within_groups']} of {v['steps']}"] for k, v in components.items()]))
            held = rl.get("heldout_reward", {})
            if held:
                blocks.append(("p", "Reward on held-out test contexts, ECR's replies vs ECR-RL's:"))
                blocks.append(("table", ["component", "ECR", "ECR-RL", "delta", "95% CI", "p", "n"],
                               [[k, fmt(v["ecr"]), fmt(v["ecr_rl"]), fmt(v["delta"]),
                                 f"[{fmt(v['ci_low'])}, {fmt(v['ci_high'])}]", fmt_p(v["p_value"], 1000), str(v["n"])]
                                for k, v in held.items()]))
            judged = rl.get("heldout_judged") or {}
            if judged.get("paired"):
                lc = judged.get("length_controlled", {})
                words = judged.get("length_words", {})
                blocks.append(("p", f"Judge ({judged.get('key')}) on {judged.get('n_judged')} held-out test contexts, "
                                    f"ECR vs ECR-RL; replies {fmt(words.get('ecr'), 2)} vs {fmt(words.get('ecr_rl'), 2)} "
                                    f"words. Length-controlled: the intercept of the paired difference regressed "
                                    f"on the word-count difference."))
                blocks.append(("table", ["metric", "ECR", "ECR-RL", "delta", "95% CI", "p",
                                         "length-controlled", "95% CI", "p", "per word"],
                               [[k, fmt(v["ecr"]), fmt(v["ecr_rl"]), fmt(v["delta"]),
                                 f"[{fmt(v['ci_low'])}, {fmt(v['ci_high'])}]", fmt_p(v["p_value"], 1000),
                                 fmt(lc[k]["intercept"]), f"[{fmt(lc[k]['ci_low'])}, {fmt(lc[k]['ci_high'])}]",
                                 fmt_p(lc[k]["p_value"], 1000), fmt(lc[k]["slope_per_word"])]
                                for k, v in judged["paired"].items()]))
            if rl.get("rl", {}).get("stopped"):
                blocks.append(("p", f"RL stopped early: {rl['rl']['stopped']}"))
    return blocks
