"""The dragon table's schema: its columns and the categories each categorical column may hold."""

COLUMNS = ("testScore", "bodyLength", "mountainRange", "color", "diet", "breathesFire")
NUMERIC_COLUMNS = ("testScore", "bodyLength")
MOUNTAIN_RANGES = ("Bavarian", "Central", "Emmental", "Julian", "Ligurian", "Maritime", "Sarntal", "Southern")
COLORS = ("Blue", "Red", "Yellow")
DIETS = ("Carnivore", "Omnivore", "Vegetarian")
CATEGORIES = {"mountainRange": MOUNTAIN_RANGES, "color": COLORS, "diet": DIETS}

FEATURE_COLUMNS = ("numberToes", "bodyLength")
"""The model's inputs, in this order, after the tutorial's feature recipe."""
FLOAT32_MAX = float.fromhex("0x1.fffffep+127")
"""The largest feature value a model takes: they compute in float32."""
INPUT_NAME, OUTPUT_NAMES = "features", ("probabilities", "predicted", "outside_training_range")
"""An exported graph's input and outputs, as ``serve --model`` and other programs read them."""


def prediction_columns(class_names) -> list[str]:
    """The columns ``predict`` adds to the user's rows."""
    return ["predicted", *(f"p_{name}" for name in class_names), "outside_training_range"]
