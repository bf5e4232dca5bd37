"""Make a tiny Mistral model and tokenizer, offline, in a Hugging Face hub cache, for `transformers serve`.

The model has Mistral's architecture at a toy size (hidden 64, 2 layers, 4 heads, 2 KV heads) and random
decoder layers, but scripted embeddings and output head: the token embeddings of a few "source" tokens are
orthogonal and the output head maps each to one successor, so greedy decoding follows a fixed chain that
depends only on the last prompt token. The chat template ends a plain prompt with ``[/INST]`` and a prompt that
offers tools with ``[/INST][TOOL_CALLS]`` (a prefilled, Mistral-style tool call), so the model answers

* without tools: ``Paris is the capital of France.``, then ``</s>``;
* with tools: ``get_current_weather[ARGS]{"city": "Paris"}``, then ``</s>``.

The tokenizer carries a ``response_template`` (transformers' declarative response parsing) that turns the second
into an OpenAI tool call; transformers ships no fallback template for model_type ``mistral``.

The model is written as the hub repository ``--repo-id`` (default ``llmops/tiny-mistral``) into the hub cache
``--cache`` (blobs, refs/main, snapshots/<rev>), so that ``transformers serve`` loads it offline by that id and
lists it on ``GET /v1/models`` (which scans the hub cache, not the forced model).

``--check-only`` builds the tokenizer and the scripted weights and checks them without torch (numpy only): the
chat template, the chains (simulated through the embeddings, the final RMSNorm and the head) and the parsing of
both answers. Without it, torch builds the model, greedy generation on the GPU (or CPU) must give both answers,
and the repository is written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile

import numpy as np

REPO_ID = "llmops/tiny-mistral"
HIDDEN = 64
ANSWER = "Paris is the capital of France."
TOOL_NAME = "get_current_weather"
TOOL_ARGS = '{"city": "Paris"}'
SPECIALS = [
    "<unk>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_CALLS]",
    "[ARGS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
]
CORPUS = [
    ANSWER,
    "In one short sentence: what is the capital of France?",
    "What is the weather like in Paris right now? Use the get_current_weather tool.",
    "Get the current weather in a city. The city, for example Paris",
    f"{TOOL_NAME} {TOOL_ARGS}",
    "The quick brown fox jumps over the lazy dog.",
    "Say hello. Hello! How are you today? I am fine, thank you.",
    "Count to five: one two three four five.",
]

# A Mistral-like template that supports tools; a prompt that offers tools ends prefilled with [TOOL_CALLS].
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- set ns = namespace(system='') %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{%- set ns.system = message['content'] ~ '\\n\\n' %}{%- endif %}"
    "{%- endfor %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if tools and loop.last %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{%- endif %}"
    "[INST]{{ ns.system if loop.first else '' }}{{ message['content'] }}[/INST]"
    "{%- elif message['role'] == 'assistant' %}"
    "{%- if message['tool_calls'] %}"
    "{%- for call in message['tool_calls'] %}"
    "[TOOL_CALLS]{{ call['function']['name'] }}[ARGS]"
    "{{ call['function']['arguments'] if call['function']['arguments'] is string "
    "else call['function']['arguments'] | tojson }}"
    "{%- endfor %}"
    "{%- else %}{{ message['content'] }}{%- endif %}"
    "{{ eos_token }}"
    "{%- elif message['role'] == 'tool' %}"
    "[TOOL_RESULTS]{{ message['content'] }}[/TOOL_RESULTS]"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt and tools and messages[-1]['role'] == 'user' %}[TOOL_CALLS]{%- endif %}"
)

RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "[/INST]",
    "fields": {
        "tool_calls": {
            "open_pattern": r"\s*\[TOOL_CALLS\]\s*(?P<name>[A-Za-z0-9_.-]+)\s*\[ARGS\]",
            "close_pattern": r"\s*(?:</s>|(?=\[TOOL_CALLS\]))",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": {"name": "{name}", "arguments": "{content}"}},
        },
        "content": {"close": "</s>", "content": "text"},
    },
}


def build_tokenizer():
    """A word-level tokenizer (Metaspace words, like SentencePiece), trained on CORPUS, with Mistral's controls."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    raw.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    raw.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=SPECIALS, min_frequency=1))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",
        additional_special_tokens=SPECIALS[3:],
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.response_template = RESPONSE_TEMPLATE
    return tokenizer


def chains(tokenizer) -> dict[str, list[int]]:
    """The token chains: each starts with the last prompt token, and ends with </s>."""
    eos = tokenizer.convert_tokens_to_ids("</s>")
    ids = {
        "chat": [tokenizer.convert_tokens_to_ids("[/INST]")] + tokenizer.encode(ANSWER, add_special_tokens=False),
        "tool": [tokenizer.convert_tokens_to_ids("[TOOL_CALLS]")]
        + tokenizer.encode(TOOL_NAME, add_special_tokens=False)
        + [tokenizer.convert_tokens_to_ids("[ARGS]")]
        + tokenizer.encode(TOOL_ARGS, add_special_tokens=False),
    }
    for name, chain in ids.items():
        chain.append(eos)
        if tokenizer.unk_token_id in chain:
            raise SystemExit(f"{name} chain has an unknown token: {tokenizer.convert_ids_to_tokens(chain)}")
    sources = [t for chain in ids.values() for t in chain[:-1]]
    if len(set(sources)) != len(sources):
        raise SystemExit(f"a token repeats in the chains: {[tokenizer.convert_ids_to_tokens(c) for c in ids.values()]}")
    return ids


def scripted_weights(vocab_size: int, chain_ids: dict[str, list[int]], seed: int = 0):
    """Embeddings (rms 1; the chain sources orthonormal directions) and an output head that maps each source to
    its successor with a logit margin of 8 * gain over every other token."""
    rng = np.random.default_rng(seed)
    embed = rng.standard_normal((vocab_size, HIDDEN)).astype(np.float32)
    sources = [t for chain in chain_ids.values() for t in chain[:-1]]
    q, _r = np.linalg.qr(rng.standard_normal((HIDDEN, len(sources))))
    for column, token in enumerate(sources):
        embed[token] = q[:, column] * np.sqrt(HIDDEN)
    embed /= np.sqrt((embed**2).mean(axis=1, keepdims=True))  # rms 1: the final RMSNorm leaves it as it is
    head = np.zeros((vocab_size, HIDDEN), dtype=np.float32)
    gain = 2.0
    for chain in chain_ids.values():
        for source, successor in zip(chain[:-1], chain[1:], strict=True):
            head[successor] += gain * embed[source] / np.linalg.norm(embed[source])
    return embed.astype(np.float32), head


def simulate(embed, head, start: int, eos: int, steps: int = 16) -> list[int]:
    """Greedy decoding of the scripted model with identity decoder layers (embedding -> RMSNorm -> head)."""
    out, token = [], start
    for _step in range(steps):
        hidden = embed[token] / np.sqrt((embed[token] ** 2).mean() + 1e-5)
        token = int(np.argmax(head @ hidden))
        out.append(token)
        if token == eos:
            break
    return out


def messages(tools: bool):
    prompt = (
        "What is the weather like in Paris right now? Use the get_current_weather tool."
        if tools
        else ("In one short sentence: what is the capital of France?")
    )
    return [{"role": "user", "content": prompt}]


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": "Get the current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "The city, for example Paris"}},
                "required": ["city"],
            },
        },
    }
]


def prompt_ids(tokenizer, tools: bool) -> list[int]:
    out = tokenizer.apply_chat_template(
        messages(tools), tools=TOOLS if tools else None, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    return list(out["input_ids"])


def check_answers(tokenizer, name: str, prompt: list[int], generated: list[int]) -> dict:
    """Decode and parse an answer as transformers serve does (raw decode, response_template, prompt prefix)."""
    parsed = tokenizer.parse_response(generated, prefix=prompt)
    text = tokenizer.decode(generated)
    print(f"  {name}: prompt ends {tokenizer.convert_ids_to_tokens(prompt[-3:])}, generated {text!r} -> {parsed}")
    if name == "chat":
        ok = parsed.get("content", "").strip() == ANSWER and not parsed.get("tool_calls")
    else:
        calls = parsed.get("tool_calls") or []
        fn = calls[0].get("function", {}) if calls else {}
        args = fn.get("arguments")
        args = json.loads(args) if isinstance(args, str) else args
        ok = len(calls) == 1 and fn.get("name") == TOOL_NAME and args == json.loads(TOOL_ARGS)
    if not ok:
        raise SystemExit(f"{name}: unexpected answer {parsed}")
    return parsed


def check_stream(tokenizer, prompt: list[int], generated: list[int]) -> list:
    """Feed the answer token by token through DecodeStream and ResponseParser, as serve's DirectStreamer does."""
    from tokenizers.decoders import DecodeStream
    from transformers.utils.chat_parsing import ResponseParser

    parser = ResponseParser(tokenizer.response_template, prefix=tokenizer.decode(prompt))
    stream = DecodeStream([], skip_special_tokens=False)
    events = list(parser.initial_events)
    for token in generated:
        text = stream.step(tokenizer._tokenizer, token)
        if text is not None:
            events.extend(parser.feed(text))
    _message, final = parser.finalize()
    events.extend(final)
    return [(e["type"], e.get("field"), e.get("text") or e.get("value")) for e in events]


def write_hub_cache(model_dir: str, cache: str, repo_id: str) -> str:
    """Put model_dir's files into the hub cache as repo_id@main (blobs + snapshot symlinks + refs/main)."""
    repo = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    shutil.rmtree(repo, ignore_errors=True)
    digest = hashlib.sha1()
    files = sorted(os.listdir(model_dir))
    for name in files:
        with open(os.path.join(model_dir, name), "rb") as handle:
            digest.update(name.encode() + b"\0" + handle.read())
    revision = digest.hexdigest()
    snapshot = os.path.join(repo, "snapshots", revision)
    os.makedirs(os.path.join(repo, "blobs"))
    os.makedirs(os.path.join(repo, "refs"))
    os.makedirs(snapshot)
    for name in files:
        with open(os.path.join(model_dir, name), "rb") as handle:
            blob = hashlib.sha256(handle.read()).hexdigest()
        shutil.copyfile(os.path.join(model_dir, name), os.path.join(repo, "blobs", blob))
        os.symlink(os.path.join("..", "..", "blobs", blob), os.path.join(snapshot, name))
    with open(os.path.join(repo, "refs", "main"), "w") as handle:
        handle.write(revision)
    return snapshot


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="hub cache folder (HF_HUB_CACHE, e.g. $HF_HOME/hub)")
    parser.add_argument("--repo-id", default=REPO_ID)
    parser.add_argument("--check-only", action="store_true", help="tokenizer, chains and parsing; no torch")
    args = parser.parse_args()

    tokenizer = build_tokenizer()
    ids = chains(tokenizer)
    eos = tokenizer.eos_token_id
    print(f"tokenizer: {len(tokenizer)} tokens; chains:")
    for name, chain in ids.items():
        print(f"  {name}: {tokenizer.convert_ids_to_tokens(chain)}")
    embed, head = scripted_weights(len(tokenizer), ids)
    for name, tools in (("chat", False), ("tool", True)):
        prompt = prompt_ids(tokenizer, tools)
        if prompt[-1] != ids[name][0]:
            raise SystemExit(f"{name}: the prompt ends with {tokenizer.convert_ids_to_tokens(prompt[-1:])}")
        generated = simulate(embed, head, prompt[-1], eos)
        if generated != ids[name][1:]:
            raise SystemExit(f"{name}: simulated {tokenizer.convert_ids_to_tokens(generated)}")
        check_answers(tokenizer, name, prompt, generated)
        print(f"  {name} stream events: {check_stream(tokenizer, prompt, generated)}")
    if args.check_only:
        print("check-only: OK")
        return 0
    if not args.cache:
        parser.error("--cache is required unless --check-only")

    import torch
    from transformers import GenerationConfig, MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=len(tokenizer),
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        dtype="float32",
    )
    model = MistralForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.from_numpy(embed))
        model.lm_head.weight.copy_(torch.from_numpy(head))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()

    def generate_all() -> bool:
        good = True
        for name, tools in (("chat", False), ("tool", True)):
            prompt = prompt_ids(tokenizer, tools)
            output = model.generate(torch.tensor([prompt], device=device), max_new_tokens=16, do_sample=False)
            generated = output[0, len(prompt) :].tolist()
            print(f"  torch {name}: {tokenizer.decode(generated)!r}")
            good = good and generated == ids[name][1:]
        return good

    print(f"greedy generation with the random decoder layers ({device}):")
    if not generate_all():
        # The random layers moved the answer: silence their outputs (the residual stream then carries the
        # embeddings through unchanged) and try again.
        print("  random layers changed the chains; zeroing o_proj and down_proj")
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
        if not generate_all():
            raise SystemExit("the scripted model does not give its answers")
    model.to("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        print(f"files: {sorted(os.listdir(tmp))}")
        snapshot = write_hub_cache(tmp, args.cache, args.repo_id)
    print(f"wrote {args.repo_id} to {snapshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
