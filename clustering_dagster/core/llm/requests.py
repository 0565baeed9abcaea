"""Sending completion requests to one model: bounded, spaced, in a form the server accepts."""

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass

from pydantic import BaseModel

from ..config.run_config import LLMSettings
from .formats import OutputForm, refuses_shape
from .limits import Backoff, RateLimiter, retry_after
from .litellm_import import import_litellm


@dataclass
class CallStats:
    """What a summary run cost: calls, cache hits, failures, tokens, dollars and seconds."""

    calls: int = 0  # HTTP requests sent, retries and refused forms included
    cache_hits: int = 0
    retries: int = 0  # after a 429, a 5xx, a timeout or a lost connection
    form_refusals: int = 0  # requests whose structured-output form the server refused
    invalid_replies: int = 0
    repaired_replies: int = 0  # accepted after a repair (control characters, a near-miss name...)
    failures: int = 0  # questions given up on: their nodes fall back
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    priced_calls: int = 0  # calls whose cost litellm knows
    wall_s: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self) | {"cost_usd": round(self.cost_usd, 6), "wall_s": round(self.wall_s, 2)}


class Requests:
    """The HTTP side of a client: at most `max_concurrency` requests in flight, starts spaced and
    held while a Retry-After runs, the structured-output `form` learned from the first refusal,
    tokens and cost added to `stats`. `open` it inside the event loop that sends."""

    def __init__(
        self,
        settings: LLMSettings,
        stats: CallStats,
        form: OutputForm,
        log: Callable[[str], None],
    ):
        self.settings = settings
        self.stats = stats
        self.form = form
        self.log = log
        self.litellm = import_litellm()
        self.litellm.suppress_debug_info = True
        self._limiter = RateLimiter(settings.requests_per_minute)
        self._backoff = Backoff(settings.backoff_s)

    def open(self) -> None:
        self._slots = asyncio.Semaphore(self.settings.max_concurrency)
        self._probe = asyncio.Lock()

    async def wait_to_retry(self, err: Exception, attempt: int) -> None:
        """Wait as the server asked (Retry-After holds every start), or back off."""
        wait = retry_after(err)
        if wait is None:
            await asyncio.sleep(self._backoff.delay(attempt))
        else:
            self._limiter.hold(wait)

    async def send(
        self, conversation: list[dict], task: str, schema: type[BaseModel], record: dict
    ):
        """One completion. Until the server accepted a form, requests go one at a time, and a
        refused form is replaced by the next one at once."""
        if not self.form.settled:
            async with self._probe:
                while not self.form.settled:
                    try:
                        response = await self._post(conversation, task, schema, record)
                    except Exception as err:
                        refused = self.form.name
                        if not (refuses_shape(err) and self.form.step_down()):
                            raise
                        self.stats.form_refusals += 1
                        self.log(
                            f"the server refused response form {refused}; using {self.form.name}"
                        )
                        continue
                    self.form.settled = True
                    return response
        return await self._post(conversation, task, schema, record)

    async def _post(
        self, conversation: list[dict], task: str, schema: type[BaseModel], record: dict
    ):
        async with self._slots:
            await self._limiter.wait()
            self.stats.calls += 1
            record["calls"] += 1
            response = await self.litellm.acompletion(
                model=self.settings.model,
                api_base=self.settings.api_base,
                temperature=self.settings.temperature,
                max_tokens=record["params"]["max_tokens"],  # the question's cap
                timeout=self.settings.timeout_s,
                max_retries=0,
                drop_params=True,
                **self.form.request(task, schema, conversation),
            )
        self._count(response, record)
        return response

    def _count(self, response, record: dict) -> None:
        usage = getattr(response, "usage", None)
        prompt = (usage and usage.prompt_tokens) or 0
        completion = (usage and usage.completion_tokens) or 0
        self.stats.prompt_tokens += prompt
        self.stats.completion_tokens += completion
        record["prompt_tokens"] += prompt
        record["completion_tokens"] += completion
        cost = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
        if cost is None:  # litellm does not know the model's price
            return
        self.stats.cost_usd += cost
        self.stats.priced_calls += 1
        record["cost_usd"] = (record["cost_usd"] or 0.0) + cost
