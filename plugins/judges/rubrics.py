"""The judge rubrics this plugin registers.

``ecr-subjective-v1``: ECR's five subjective metrics (Zhang et al., "Towards Empathetic
Conversational Recommender Systems", RecSys 2024), scored 0-9 on movie recommendations. The
wording is our own (docs/judges.md). Any change to a text below needs a new name (it keys
cached scores and leaderboard columns) and a new pinned fingerprint; tests/test_judges.py
fails until both are updated.

``crsarena-turn-v1`` and ``crsarena-dialogue-v1``: the aspects people rated in CRSArena-Eval
(Joko & Hasibi, SIGIR 2026; ``crsbench judge validate``), worded from the annotation
questions of that dataset, on the 0-9 scale of every crsbench judge (the validation uses
correlations, which do not depend on the scale). The dialogue rubric shows the whole
conversation: everything before the last recommender turn as the context, that turn as the
reply (``crsbench_plugins.judges.crsarena.dialogue_input``).
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

_CRSARENA_SYSTEM = ("You are a careful annotator. You rate a movie recommender chatbot's replies the way "
                    "its users would, and answer exactly in the format you are asked for.")

CRSARENA_TURN = Rubric(
    name="crsarena-turn-v1",
    description="CRSArena-Eval's turn-level aspects (relevance, interestingness), 0-9, for a recommender's reply.",
    domain="movies",
    fingerprint="d6699062f4297c6b",
    system_prompt=_CRSARENA_SYSTEM,
    intro=("You will read a conversation between a user and a movie recommender chatbot, followed by "
           "the chatbot's next reply. Rate that reply on a scale from 0 (not at all) to 9 (completely), "
           "from the user's point of view, in the light of the conversation so far. The qualities are:"),
    outro=("Judge each quality on its own. Do not reward length for its own sake: a short reply that "
           "answers the user is relevant, a long one that ignores the user is not."),
    criteria=(
        Criterion("relevance", "relevance",
                  "does the reply make sense and meet the user's interests, i.e. is it appropriate to the "
                  "user's previous turn and does it serve what the user is looking for",
                  ("it makes no sense here or ignores what the user asked",
                   "somewhat relevant: partly answers the user or only loosely fits their interests",
                   "fully relevant: it makes sense and meets exactly what the user is looking for")),
        Criterion("interestingness", "interestingness",
                  "does the reply make the user want to continue the conversation, e.g. by engaging "
                  "chit-chat while it presents facts about the movies",
                  ("dull or off-putting; the user would rather stop",
                   "somewhat engaging",
                   "engaging; the user clearly wants to keep talking")),
    ),
    max_turns=6,
    max_turn_chars=600,
)

CRSARENA_DIALOGUE = Rubric(
    name="crsarena-dialogue-v1",
    description="CRSArena-Eval's dialogue-level aspects (understanding, task completion, interest arousal, "
                "efficiency, overall), 0-9, for a whole conversation.",
    domain="movies",
    fingerprint="2b3df306daa5c7c4",
    system_prompt=_CRSARENA_SYSTEM,
    intro=("You will read a whole conversation between a user and a movie recommender chatbot; its last "
           "chatbot turn is shown as the reply. Rate the chatbot's performance over the WHOLE conversation, "
           "not only that last reply, on a scale from 0 (not at all) to 9 (completely). The qualities are:"),
    outro=("Judge each quality on its own, from the user's point of view. Do not reward length for its "
           "own sake."),
    criteria=(
        Criterion("understanding", "understanding",
                  "as a whole, does the chatbot understand the user's request and try to fulfil it",
                  ("it does not understand the request or fails to fulfil it",
                   "it partly understands the request or fulfils it partially",
                   "it understands the request and fulfils it")),
        Criterion("task_completion", "task completion",
                  "does the chatbot make recommendations that the user finally accepts",
                  ("no suggestion the user accepts",
                   "suggestions the user only partially accepts",
                   "suggestions the user finally accepts")),
        Criterion("interest_arousal", "interest arousal",
                  "does the chatbot try to spark the user's interest in something new, a suggestion the "
                  "user is not familiar with",
                  ("no attempt to intrigue the user",
                   "some attempt to intrigue the user",
                   "a clear, appealing attempt to interest the user in something new")),
        Criterion("efficiency", "efficiency",
                  "does the chatbot make recommendations that fit the user's interests within the first "
                  "three interactions",
                  ("no good suggestion within the first three interactions",
                   "a partly fitting suggestion within the first three interactions",
                   "a good, fitting suggestion within the first three interactions")),
        Criterion("dialogue_overall", "overall impression",
                  "the overall impression of the chatbot's performance throughout the conversation, how "
                  "satisfied the user would be",
                  ("very dissatisfied", "neutral", "very satisfied")),
    ),
    all_metrics_question=("Rate the conversation on all five qualities. Answer with only a JSON object with "
                          "the keys {keys}, each an integer from 0 to 9, and nothing else."),
    metric_question="Question: rate the {title} of the chatbot in this conversation from 0 to 9. "
                    "Answer with a single digit.",
    max_turns=40,
    max_turn_chars=300,
)

RUBRICS = (ECR_SUBJECTIVE, CRSARENA_TURN, CRSARENA_DIALOGUE)
