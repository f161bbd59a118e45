"""From frames to answers: sound events with wall-clock times, search by example, exports."""
