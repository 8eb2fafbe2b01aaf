"""Early-exit knobs: per candidate exit point, off or a confidence threshold; and the confidence
criterion (max softmax probability, or one minus the normalised entropy) for the whole model."""

from __future__ import annotations

from slimsearch.config import EXIT_CRITERIA
from slimsearch.spaces.exit_points import find_exit_points, trace
from slimsearch.spaces.knobs import Choice, Knob, KnobFamily, Untouched, register_family

OFF = "off"
CRITERION = "criterion"
CRITERIA = EXIT_CRITERIA


@register_family
class ExitFamily(KnobFamily):
    name = "exits"

    def discover(self, model, example_input, settings):
        try:
            points = find_exit_points(trace(model), example_input)
        except Exception as error:  # fx cannot trace data-dependent Python control flow
            reason = f"torch.fx cannot trace the model ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
            return [], [Untouched(self.name, "*", reason)]
        if not points:
            return [], [Untouched(self.name, "*", "no point where one tensor carries the whole state between stages")]
        options = (OFF, *sorted(settings.exit_thresholds))
        knobs = [Knob(self.name, CRITERION, Choice(tuple(settings.exit_criteria)),
                      default=settings.exit_criteria[0], extreme=settings.exit_criteria[0])]
        # Extreme: every exit on at the lowest threshold, so every sample leaves at the first
        # exit: the fastest this family can make the model.
        knobs += [Knob(self.name, point.stage, Choice(options), default=OFF, extreme=options[1], stage=point.stage)
                  for point in points]
        return knobs, []
