"""The report: figures, HTML from templates/, PDF by weasyprint, unattended archive runs."""
