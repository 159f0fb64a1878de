"""Name -> builder registries, one mechanism for every kind (timm's `@register_model` is the model).

The bottom of the house: it imports nothing of mmssl, so the config core can list the registered tasks
without importing them. Each kind registers where it is defined:

    @register_task("order")            # mmssl/tasks/order.py: a PretextTask subclass
    @register_loss("nt_xent")          # mmssl/losses/nt_xent.py: an nn.Module loss
    @register_video_encoder("tiny3d")  # mmssl/models/video.py: a VideoEncoder builder
    @register_audio_encoder("tiny_audio")
    @register_encoder_input("luma")    # mmssl/transforms/inputs.py: a front end, model input -> encoder input

A module of your own registers the same way; import it before the run (`--import my_tasks`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
B = TypeVar("B", bound=Callable[..., object])


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would repr() the message, adding quotes
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to builders (classes or functions) that return a ``T``.

    Iterating yields the registered names in sorted order; ``name in registry`` tests membership.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[B], B]:
        """Decorator that registers a builder under ``name``; a name can be taken once."""

        def decorator(builder: B) -> B:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._builders[name] = builder
            return builder

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        """The builder registered under ``name`` (``UnknownNameError`` listing the known names)."""
        try:
            return self._builders[name]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {', '.join(self)}") from None

    def build(self, name: str, **kwargs: object) -> T:
        """Call the builder registered under ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)

    def items(self) -> list[tuple[str, Callable[..., T]]]:
        """(name, builder) pairs in name order."""
        return [(name, self._builders[name]) for name in self]

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._builders))

    def __len__(self) -> int:
        return len(self._builders)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={list(self)})"


TASKS: Registry[Any] = Registry("task")
LOSSES: Registry[Any] = Registry("loss")
VIDEO_ENCODERS: Registry[Any] = Registry("video encoder")
AUDIO_ENCODERS: Registry[Any] = Registry("audio encoder")
ENCODER_INPUTS: Registry[Any] = Registry("encoder input")
LABEL_FAMILIES = ("action", "object")  # what a task's signal targets: the labels the benchmark probes it on

register_loss = LOSSES.register
register_video_encoder = VIDEO_ENCODERS.register
register_audio_encoder = AUDIO_ENCODERS.register
register_encoder_input = ENCODER_INPUTS.register


def register_task(name: str, *, metric: object = None, label_family: str | None = None,
                  encoder_input: str | None = None) -> Callable[[B], B]:
    """Class decorator: register a PretextTask subclass as ``name`` (which becomes its ``name``).

    Its settings dataclass (the class attribute ``config_class``) becomes the run config's section
    ``task.<name>``. The declarations, each left at PretextTask's default when not given:
    ``metric``, its pretext metric (a ``PretextMetric``: an entry of its loss dict and that entry's
    chance level); ``label_family``, what its signal targets (one of ``LABEL_FAMILIES``: the labels
    the benchmark probes it on); ``encoder_input``, the front end its encoder sees (a name in
    ``ENCODER_INPUTS``; saved in its checkpoints and applied wherever features are taken)."""
    if label_family is not None and label_family not in LABEL_FAMILIES:
        raise ValueError(f"task {name!r}: label_family {label_family!r} is not one of {', '.join(LABEL_FAMILIES)}")
    if encoder_input is not None:
        ENCODER_INPUTS.get(encoder_input)  # an unknown front end fails here, naming the known ones
    declared = {"metric": metric, "label_family": label_family, "encoder_input": encoder_input}

    def decorator(cls: B) -> B:
        cls.name = name  # type: ignore[attr-defined]
        for key, value in declared.items():
            if value is not None:
                setattr(cls, key, value)
        return TASKS.register(name)(cls)

    return decorator
