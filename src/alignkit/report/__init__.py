"""`alignkit report`: a self-contained HTML report and a markdown summary of run, eval and sweep directories."""
