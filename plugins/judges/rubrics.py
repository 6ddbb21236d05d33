"""The judge rubrics this plugin registers.

``ecr-subjective-v1``: ECR's five subjective metrics (Zhang et al., "Towards Empathetic
Conversational Recommender Systems", RecSys 2024), scored 0-9 on movie recommendations. The
wording is our own (docs/judges.md). Any change to a text below needs a new name (it keys
cached scores and leaderboard columns) and a new pinned fingerprint; tests/test_judges.py
fails until both are updated.
"""
from crsbench.rubric import Criterion, Rubric

ECR_SUBJECTIVE = Rubric(
    name="ecr-subjective-v1",
    description="ECR's five subjective metrics (0-9) for movie recommender replies.",
    domain="movies",
    fingerprint="b3416a64828ff4ec",
    system_prompt=("You are a careful annotator. You rate replies of a movie recommender chatbot "
                   "and answer exactly in the format you are asked for."),
    intro=("You will read a conversation between a user and a movie recommender chatbot, followed by "
           "the chatbot's next reply. Rate that reply on a scale from 0 (not at all) to 9 (extremely), "
           "judging only the reply, in the light of the conversation so far. The five qualities are:"),
    outro=("Judge each quality on its own: a short reply can be lifelike without being "
           "informative. Do not reward length for its own sake."),
    criteria=(
        Criterion("emotional_intensity", "emotional intensity",
                  "how strongly the reply expresses feelings such as excitement, enthusiasm, warmth or sympathy",
                  ("flat and neutral, no feeling at all",
                   "some mild feeling, e.g. \"I liked it\"",
                   "vivid, strong feeling throughout the reply")),
        Criterion("emotional_persuasiveness", "emotional persuasiveness",
                  "how much the reply would make the user want to watch the recommended movie by appealing "
                  "to the user's feelings, tastes or experiences",
                  ("no appeal to the user's feelings",
                   "a generic appeal that would fit any user",
                   "a warm, personal appeal tailored to what this user said")),
        Criterion("logical_persuasiveness", "logical persuasiveness",
                  "how well the reply gives sound reasons why the recommendation fits what the user asked "
                  "for (genre, actors, plot, similar movies)",
                  ("no reason, or the reply ignores or contradicts the user's request",
                   "a vague or generic reason",
                   "specific, coherent reasons that clearly match the user's request")),
        Criterion("informativeness", "informativeness",
                  "how much concrete, relevant information about the recommended movies the reply gives "
                  "(plot, cast, genre, year, what makes the movie special)",
                  ("no information at all",
                   "a title with one detail",
                   "several specific, relevant details")),
        Criterion("lifelikeness", "lifelikeness",
                  "how natural, fluent and human the reply sounds, like a friendly movie fan talking",
                  ("broken, robotic or nonsensical",
                   "understandable but stiff or templated",
                   "fluent, natural and engaging")),
    ),
    answer_prefix="Score (0-9):",
    metric_question="Question: rate the {title} of the reply from 0 to 9. Answer with a single digit.",
    all_metrics_question=("Rate the reply on all five qualities. Answer with only a JSON object with the keys "
                          "{keys}, each an integer from 0 to 9, and nothing else."),
    user_label="User",
    system_label="Recommender",
    empty_reply="(empty reply)",
    max_turns=6,
    max_turn_chars=600,
)

RUBRICS = (ECR_SUBJECTIVE,)
