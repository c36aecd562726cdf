"""`alignkit label`: a local web app where people compare answers, and where their labels audit the AI judge."""
