"""Figures of token attributions and of their agreement with attention."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from workbench.analysis.attribution import Attribution

from ._common import axis_title, own, sized_chart, titled


def attribution_bar(
    attribution: Attribution,
    *,
    level: str = "word",
    include_special: bool = True,
    fig: go.Figure | None = None,
) -> go.Figure:
    """Bars of attribution per word (or per token position), in prompt order.

    Args:
        attribution: from ``integrated_gradients`` or ``occlusion``.
        level: ``"word"`` or ``"token"``.
        include_special: show BOS / EOS / padding bars (IG attributes to them too).

    Returns:
        ``go.Figure`` with one ``go.Bar``: ``x`` labels, ``y`` attributions; IG's completeness check in
        the subtitle.

    Example:
        >>> attribution_bar(integrated_gradients(pipe, run, step=3))  # doctest: +SKIP
    """
    if level not in ("word", "token"):
        raise ValueError(f"level must be 'word' or 'token', got {level!r}")
    df = attribution.words if level == "word" else attribution.tokens
    if not include_special:
        df = df[df.kind.isin(["word", "punct"])]
    x = df.label.tolist() if level == "word" else [f"{p}: {t}" for p, t in zip(df.position, df.token)]
    colors = ["#888888" if k in ("bos", "eos", "pad") else "#1f77b4" for k in df.kind]
    ours = own(fig)
    if ours:
        fig = sized_chart(
            go.Figure(), width=max(640, min(1000, 60 + 28 * len(x))), bottom=90 if level == "word" else 130
        )
    fig.add_trace(go.Bar(x=x, y=df.attribution.tolist(), marker_color=colors, name=attribution.method))
    fig.update_xaxes(title_text="word" if level == "word" else "encoder position: token")
    fig.update_yaxes(title_text=axis_title(attribution.target, 320))
    sub = attribution.describe()
    if attribution.method == "integrated_gradients":
        sub += (
            f"<br>sum of attributions {attribution.tokens.attribution.sum():.4g} vs output change "
            f"{attribution.output_input - attribution.output_baseline:.4g} (convergence delta {attribution.delta:.2g})"
        )
    return titled(fig, f"Token attribution ({attribution.method.replace('_', ' ')})", sub, grow=ours)


def attribution_vs_attention_figure(table: pd.DataFrame, *, fig: go.Figure | None = None) -> go.Figure:
    """Scatter of each word's attribution rank against its attention-mass rank (1 = largest).

    Points on the diagonal are words where attribution and attention agree. What the attribution
    ranks are of (``table.attrs["ranked_by"]``: ``|attribution|`` by default, or signed) is written
    on the y axis and in the subtitle; hovering a point shows its attribution.

    Args:
        table: from ``attribution_vs_attention``.

    Example:
        >>> attribution_vs_attention_figure(attribution_vs_attention(ig, run))  # doctest: +SKIP
    """
    need = {"label", "rank_attribution", "rank_attention"}
    if not need <= set(table.columns):
        raise ValueError(f"table must come from attribution_vs_attention (columns {sorted(need)})")
    n = len(table)
    ranked_by = table.attrs.get("ranked_by")
    ours = own(fig)
    if ours:
        fig = sized_chart(go.Figure(), width=640, plot_height=400)
    fig.add_trace(
        go.Scatter(
            x=[1, n], y=[1, n], mode="lines", line={"dash": "dot", "color": "#aaaaaa"}, name="agreement"
        )
    )
    fig.add_trace(
        go.Scatter(
            x=table.rank_attention.tolist(),
            y=table.rank_attribution.tolist(),
            text=table.label.tolist(),
            customdata=table.attribution.tolist() if "attribution" in table.columns else None,
            mode="markers+text",
            # Neighbouring ranks alternate above and below their points, so their labels do not meet.
            textposition=["top center" if i % 2 == 0 else "bottom center" for i in range(n)],
            hovertemplate="%{text}: attribution rank %{y}, attention rank %{x}"
            + (", attribution %{customdata:.3g}" if "attribution" in table.columns else "")
            + "<extra></extra>",
            name="words",
        )
    )
    fig.update_xaxes(title_text="attention-mass rank (1 = most attended)", autorange="reversed")
    fig.update_yaxes(title_text=axis_title(_rank_title(ranked_by), 400), autorange="reversed")
    sub = f"Spearman rank correlation {table.attrs.get('spearman', float('nan')):.2f}"
    if ranked_by:
        sub += f", words ranked by {ranked_by}"
    if "attribution" in table.attrs:
        sub += f" | {table.attrs['attribution']}"
    if "aggregation" in table.attrs:
        sub += f"<br>attention: {table.attrs['aggregation']}"
    return titled(fig, "Attribution vs attention, per word", sub, grow=ours)


def _rank_title(ranked_by: str | None) -> str:
    """The attribution-rank axis title: what rank 1 is."""
    if ranked_by == "signed attribution":
        return "attribution rank (1 = most positive)"
    if ranked_by:
        return f"attribution rank (1 = largest {ranked_by})"
    return "attribution rank (1 = most attributed)"
