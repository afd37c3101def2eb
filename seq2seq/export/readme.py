"""The README.md of an export folder: how to drive its graphs from any runtime."""

from __future__ import annotations

from typing import Any

_TRANSLATION = """\
## Translating

1. Tokenize the source with the tokenizer files (`{tokenizers}`), keep at most
   {max_ids} ids and append `</s>` (id {eos}); pad a batch with id {pad}.
2. Run `encoder.onnx` on `src` [batch, source] and `src_lengths` [batch] (`</s>` counted).
   Of its outputs, those `decoder_step.onnx` takes are the decoder state: {state}.
3. Start every row with `<s>` (id {bos}) and run `decoder_step.onnx` on `tokens` [batch] and
   the state. It returns `log_probs` [batch, vocab] and the new recurrent state
   ({recurrent}: each `X_out` is fed back as `X` at the next step){attention}. `memory`, `keys`
   and `mask`, when present, stay as the encoder made them.
4. Greedy search: take the best token of every row, stop a row at `</s>` or after
   `max_length_ratio * source length + max_length_extra` tokens (manifest `decoding`).
   Beam search: keep `beam_size` rows per sentence, score them with the summed log-probs
   divided by the GNMT length penalty `((5 + length) / 6) ** length_penalty`, and reorder
   every state tensor's batch axis (axis 1 of `hidden`/`cell`, axis 0 of the others) to
   follow the surviving beams.
5. Detokenize the ids between `<s>` and `</s>`.
"""

_CLASSIFICATION = """\
## Classifying

Tokenize the text with the tokenizer files (`{tokenizers}`, no `</s>`), cut it to
{max_length} ids, pad a batch with id {pad} and run `classifier.onnx` on `ids`
[batch, length] and `lengths` [batch] (each >= 1; an empty text is the one id `</s>`).
`probabilities` [batch, classes] has one column per label of `labels.json`, in its order.
"""

_LANGUAGE_MODEL = """\
## Generating

The state before the first token is {initial}. Feed the start symbol (`<s>`, id {bos},
for `lm_mode` lines; the line end for `lm_mode` stream) and the prompt's ids to
`step.onnx` as `tokens` [batch, steps], with the state ({state}); it returns
`log_probs` [batch, steps, vocab] (and `logits`) for every position and the state after
the last (`X_out` is fed back as `X`). Then draw or pick the next token from the last
position's log-probabilities and feed it as `tokens` [batch, 1], until `</s>` (id {eos})
or `max_tokens`. Never emit `<pad>` or `<s>`.
"""


def readme_text(manifest: dict[str, Any]) -> str:
    """README.md for an export with this manifest."""
    head, special = manifest["head"], manifest["special_tokens"]
    graphs = manifest["graphs"]
    tokenizers = ", ".join(manifest["files"]["tokenizers"])
    lines = [f"# A seq2seq {head.replace('_', ' ')} model in ONNX", "",
             "Exported by `seq2seq export`. `manifest.json` names every graph's inputs and "
             "outputs (element type and shape; named axes such as `batch` are dynamic), the "
             "special token ids and the decoding defaults. Any ONNX runtime can run the "
             f"graphs (opset {manifest['opset']}); with seq2seq installed, "
             "`seq2seq translate|classify|generate|evaluate THIS_FOLDER` and "
             "`Translator/Classifier/Generator.from_pretrained(THIS_FOLDER)` run them with "
             "ONNX Runtime.", "",
             "Special ids: " + ", ".join(f"`{k}` {v}" for k, v in special.items()) + ".", "",
             "Graphs:", ""]
    for graph in graphs.values():
        lines.append(f"- `{graph['file']}`: {graph['description']}")
    lines.append("")
    if head == "translation":
        step = graphs["decoder_step"]
        state = [t["name"] for t in step["inputs"][1:]]
        recurrent = [t["name"] for t in step["outputs"] if t["name"].endswith("_out")]
        attention = (", and `attention` [batch, source], the weights over the source"
                     if any(t["name"] == "attention" for t in step["outputs"]) else "")
        lines.append(_TRANSLATION.format(
            tokenizers=tokenizers, state=", ".join(f"`{n}`" for n in state),
            recurrent=", ".join(f"`{n}`" for n in recurrent), attention=attention,
            max_ids=manifest["decoding"]["max_src_length"] - 1, **special))
    elif head == "classification":
        lines.append(_CLASSIFICATION.format(
            tokenizers=tokenizers, max_length=manifest["classification"]["max_length"],
            **special))
    else:
        state = [t["name"] for t in graphs["step"]["inputs"][1:]]
        initial = ("what `initial_state.onnx` returns for the condition (a label id of "
                   "`conditions.json`, or a feature vector)" if "initial_state" in graphs
                   else "zeros of the shapes the manifest gives")
        lines.append(_LANGUAGE_MODEL.format(initial=initial,
                                            state=", ".join(f"`{n}`" for n in state),
                                            **special))
    return "\n".join(lines)
