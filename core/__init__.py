"""The shared vocabulary at the bottom: settings (flag > environment > default), the option
declarations they are built from, and the names of what a trial records. `objectives/`,
`storage/` and `search/` all import it; it imports none of them."""
